"""The strict wire-rule checker the tests apply to every captured message.

It lives in the package (``everkit.framework.conformance``) so that ``everkit check`` and
the tests share one code path; this module only keeps the old import working.
"""

from everkit.framework.conformance import ERROR_KEYS, MSG_TYPES, RETAINED, violations

__all__ = ["ERROR_KEYS", "MSG_TYPES", "RETAINED", "violations"]
