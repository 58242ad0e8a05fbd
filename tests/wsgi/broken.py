"""A module that fails to import, for the import error tests."""

import json


def helper():
    return json.dumps({})


raise ImportError("this module is broken on purpose")
