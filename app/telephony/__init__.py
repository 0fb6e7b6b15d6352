"""Phone calls through LiveKit SIP: placing outbound calls (`outbound`) and running
campaigns (`campaigns`). On the store and LiveKit's server API (`livekit-api`); the
API and the supervisor use it, the worker does not."""
