"""The read-only web site of ``reconciler web`` (:mod:`reconciler.web.app`)."""
