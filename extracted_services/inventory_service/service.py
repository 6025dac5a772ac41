from extracted_services.common.service import Service
from extracted_services.inventory_service import importer, models, urls

SERVICE = Service(
    name="inventory_service",
    database_name="inventory.sqlite3",
    default_port=8102,
    migrations=models.MIGRATIONS,
    routes=urls.urlpatterns,
    tables=models.TABLES,
    copy_from_legacy=importer.copy_from_legacy,
    event_handlers=models.EVENT_HANDLERS,
)
