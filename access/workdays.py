"""Working days (Monday to Friday) for review ages and the SLA."""

from datetime import date, datetime, timedelta


def working_days_between(start: datetime | date, end: datetime | date) -> int:
    """Whole working days after ``start`` up to and including ``end`` (0 on the same day)."""
    start_day = start.date() if isinstance(start, datetime) else start
    end_day = end.date() if isinstance(end, datetime) else end
    if end_day <= start_day:
        return 0
    total = (end_day - start_day).days
    weeks, rest = divmod(total, 7)
    days = weeks * 5
    for offset in range(1, rest + 1):
        if (start_day + timedelta(days=weeks * 7 + offset)).weekday() < 5:
            days += 1
    return days


def subtract_working_days(moment: datetime, days: int) -> datetime:
    """The moment ``days`` working days before ``moment`` (for 'older than the SLA' queries)."""
    result = moment
    while days > 0:
        result -= timedelta(days=1)
        if result.weekday() < 5:
            days -= 1
    return result
