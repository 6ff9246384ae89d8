"""Failures of business operations, as typed errors the gateway renders as problem+json.

They subclass the system layer's ``BackendError`` so the gateway's one handler renders them;
the experience layer imports them from here (it may not import ``system_apis``).
"""

from __future__ import annotations

from system_apis.errors import (
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendTimeout,
    BackendUnavailable,
)

__all__ = [
    "BackendConflict",
    "BackendError",
    "BackendNotFound",
    "BackendTimeout",
    "BackendUnavailable",
    "DuplicateCustomer",
    "KeyInProgress",
    "NotFound",
    "OrderNotCancellable",
    "StepFailed",
]


class StepFailed(BackendError):
    """A step of a composed operation failed; completed steps were undone where possible.

    ``status`` is the cause's (503 backend down, 504 timeout, 502 bad data, 409 conflict...),
    ``step`` names the failed step, ``compensated`` the steps undone, ``not_undone`` those that
    could not be (and why), so the caller knows exactly what state the business is in.
    """

    problem_type = "step-failed"

    def __init__(
        self,
        step: str,
        cause: BaseException,
        *,
        compensated: list[str] | None = None,
        not_undone: dict[str, str] | None = None,
        resumable: bool = False,
    ) -> None:
        backend = cause.backend if isinstance(cause, BackendError) else step.split(".", 1)[0]
        why = cause.detail if isinstance(cause, BackendError) else type(cause).__name__
        super().__init__(backend, f"step {step} failed: {why}")
        self.step = step
        self.status = cause.status if isinstance(cause, BackendError) else 503
        self.cause = cause
        self.compensated = list(compensated or [])
        self.not_undone = dict(not_undone or {})
        self.resumable = resumable
        if self.compensated:
            self.detail += "; undone: " + ", ".join(self.compensated)
        if self.not_undone:
            self.detail += "; kept: " + ", ".join(f"{k} ({v})" for k, v in self.not_undone.items())
        if resumable:
            self.detail += "; repeat the same request to finish"

    def problem_extra(self) -> dict[str, object]:
        """The members the problem+json body should carry besides the standard ones."""
        return {
            "step": self.step,
            "compensated": self.compensated,
            "not_undone": self.not_undone,
            "resumable": self.resumable,
        }


class NotFound(BackendNotFound):
    """A business record does not exist (or is not the caller's: same answer, by design)."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__("trellis", f"no {what} {ident[:64]!r}")


class DuplicateCustomer(BackendConflict):
    """Onboarding or lead capture for an email the CRM already holds."""

    problem_type = "duplicate-customer"

    def __init__(self, kind: str, email: str) -> None:
        super().__init__("crm", f"a {kind} with this email already exists")
        self.email = email


class KeyInProgress(BackendConflict):
    """A request with the same Idempotency-Key is still running: retry after it finished."""

    problem_type = "request-in-progress"

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__(
            "trellis", "a request with this Idempotency-Key is in progress; retry shortly"
        )
        self.retry_after = retry_after


class OrderNotCancellable(BackendConflict):
    """The order has left the warehouse or been billed: cancelling is no longer possible."""

    problem_type = "order-not-cancellable"

    def __init__(self, order_id: str, status: str) -> None:
        why = "it has shipped" if status == "shipped" else "it has been invoiced by the ERP"
        super().__init__("erp", f"order {order_id} is {status}: {why}; a return is needed instead")
        self.order_status = status
