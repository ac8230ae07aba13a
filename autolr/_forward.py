"""Keyword arguments that one class takes on behalf of another, shown in its ``help()``.

``FedHyperStrategy`` takes ``FedHyperServer``'s arguments and ``LLMSearcher`` takes
``LLMClient``'s: each accepts them through ``**kwargs`` and forwards them, so they keep the
other class's names, defaults and checks and a new argument there needs no change here. These
helpers read those arguments once and spell them out in the forwarding ``__init__``'s signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["keyword_only", "set_forwarding_signature"]


def keyword_only(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """``target``'s keyword-only parameters by name, in their order.

    Example:
        >>> def f(a, *, lr=0.1, k=4): ...
        >>> list(keyword_only(f))
        ['lr', 'k']
    """
    return {
        p.name: p
        for p in inspect.signature(target).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def set_forwarding_signature(
    init: Callable[..., Any], forwarded: dict[str, inspect.Parameter], *, keep_kwargs: bool
) -> None:
    """Spell ``forwarded`` out in ``init``'s signature, where its ``**kwargs`` stands.

    Args:
        init: The forwarding ``__init__``, whose ``**kwargs`` take the forwarded arguments.
        forwarded: Those arguments (:func:`keyword_only` of the target).
        keep_kwargs: Keep ``**kwargs`` after them (``init`` also takes other arguments);
            ``False`` drops it (it takes only ``forwarded``).

    Example:
        >>> class A:
        ...     def __init__(self, n, *, x=1, **kwargs): ...
        >>> set_forwarding_signature(A.__init__, keyword_only(lambda *, y=2: 0), keep_kwargs=False)
        >>> str(inspect.signature(A))
        '(n, *, x=1, y=2)'
    """
    own = list(inspect.signature(init).parameters.values())
    var = [p for p in own if p.kind is inspect.Parameter.VAR_KEYWORD]
    named = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params = [*named, *forwarded.values(), *(var if keep_kwargs else [])]
    init.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
