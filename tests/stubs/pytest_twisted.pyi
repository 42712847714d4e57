# The part of pytest-twisted the tests use, typed (the package ships no types), so that
# mypy checks the decorated tests instead of seeing them as untyped.
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

_P = ParamSpec("_P")
_T = TypeVar("_T")

def ensureDeferred(f: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Deferred[_T]]: ...
def async_yield_fixture(
    *args: Any, **kwargs: Any
) -> Callable[[Callable[_P, AsyncIterator[_T]]], Callable[_P, AsyncIterator[_T]]]: ...
