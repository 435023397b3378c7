"""Scheduling checks shared by ``refine serve``: a cron string is validated the way the Prefect
server will validate it, before anything is registered."""

from __future__ import annotations


class ScheduleError(ValueError):
    """A schedule the Prefect server would refuse; the message names it and says why."""


def check_cron(cron: str) -> str:
    """Return ``cron`` when Prefect accepts it as a cron schedule, else raise :class:`ScheduleError`.

    Example:
        >>> check_cron("0 3 * * *")
        '0 3 * * *'
    """
    from pydantic import ValidationError
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValidationError as exc:
        reason = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
        raise ScheduleError(f"--cron {cron!r} is not a valid cron schedule ({reason}); "
                            "expected five fields, e.g. '0 3 * * *' for 03:00 every day") from None
    return cron
