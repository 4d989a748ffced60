"""People: users, memberships and roles, sign-up, sessions, and the self-service API the console uses.

``accounts`` holds the rules (who may sign up, log in, hold which key); ``access`` turns a request into a
:class:`~tenantgate.people.access.Caller` (session cookie with CSRF, or the user's own key); ``auth_api``,
``me_api`` and ``admin_api`` are thin JSON routes over those rules, and the console calls the same rules.
Nothing here is on the ``/v1`` request path: a key's user level reaches the proxy through the key cache.
"""
