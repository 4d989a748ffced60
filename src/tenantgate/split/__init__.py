"""The split deployment: an edge process on the clients' network that forwards every call to a remote core
over one mTLS connection pool, and resumes across network cuts (see :mod:`tenantgate.split.edge`)."""
