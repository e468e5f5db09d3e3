"""The service's routes, one APIRouter per area; `facelens.service.app.create_app` includes them."""
