"""``python -m wx_backend.sandbox``: run the WeChat sandbox on ``WX_SANDBOX_PORT``."""

import asyncio

from .app import main

asyncio.run(main())
