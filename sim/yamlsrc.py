"""YAML with line marks, defined in `app.domain.scenario.yamlsrc`; re-exported for the sim."""

from app.domain.scenario.yamlsrc import (
    LineMap as LineMap,
    Loc as Loc,
    YamlSourceError as YamlSourceError,
    load_yaml as load_yaml,
    loads_yaml as loads_yaml,
)
