"""The conversation scenario format, one definition for the offline harness (`sim/`,
which re-exports it) and the server (an agent's stored tests, `app.domain.agent_tests`):
the pydantic models (`format`, `voice`), YAML with line marks (`yamlsrc`) and the
failure report (`report`), so every problem points at the line that said it."""
