"""Events other apps act on (the playground cancels jobs on them), sent inside the change's transaction."""

from django.dispatch import Signal

#: a grant was revoked (``grant``): its holder's jobs on that release stop at once
grant_revoked = Signal()
#: a new licence version was published (``version``): nobody has accepted it yet
licence_version_published = Signal()
