"""The History API (issue 16): a tenant-isolated HTTP service over the archive.

One noun per module: `problems` (RFC 9457 error bodies), `params` (what a request may say),
`auth` (keys, scopes, the tenant of a transaction), `reads` (the queries and their cursors),
`models` (the OpenAPI schema of the answers), `routes` (the endpoints), `app` (the FastAPI
application and its connection pool), `server` (uvicorn, and the checks before serving).
"""
