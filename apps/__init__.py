"""The persam Gradio web demo (run with `python -m apps.demo`)."""
