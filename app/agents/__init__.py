"""Agents: the factory that builds LiveKit agents from configs (`factory`), the base
agent class, the tools and their registry, the audio models a voice agent gets, and
the PTE examiner's scoring tool. Routing rules live in `app.domain.routing`, the
resolver in `app.store.resolver`."""
