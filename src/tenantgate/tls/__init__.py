"""TLS for the gateway's own listener: a context that follows its files (rotation without a restart), optional
client-certificate verification (mTLS), and a small private CA for people who have no PKI (``tenantgate certs``).
"""
