"""HTTP only: the endpoint table, routers per resource, middleware, and errors as statuses."""
