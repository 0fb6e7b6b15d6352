"""Signed webhooks from the event journal: fan-out, delivery attempts, the dispatcher
loop, the URL policy and Standard Webhooks signing. Imports domain and store only; the
API (endpoint writes, URL policy) and the supervisor and `chat` (the dispatcher) use it."""
