"""``python -m apps.demo --model NAME --checkpoint PATH``: see ``--help`` and README's *Web demo*."""

from apps.demo.server import main

if __name__ == "__main__":
    raise SystemExit(main())
