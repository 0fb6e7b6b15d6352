"""What an operator watches: Prometheus metrics of the running service.

Below every other layer (it imports nothing from app/), so the store, the agents, the
worker and the API can all record into it.
"""
