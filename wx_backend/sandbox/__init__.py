"""The WeChat sandbox: a local stand-in for WeChat's servers, speaking their wire formats.

WeChat is out of reach in development and tests, so the backend talks to this server at its
configured base URLs, through the same code as in production. The sandbox checks
credentials and signatures as WeChat does, answers with WeChat's documented error codes,
and can be told to misbehave (``POST /sandbox/faults``). Under ``/sandbox/`` it also plays
the customer's phone and lets tests look inside; see ``docs/sandbox.md``.

Each module here exports ``routes``: a list of ``(pattern, Handler)``.
"""
