from extracted_services.common.service import Service
from extracted_services.orders_service import importer, models, urls, views

SERVICE = Service(
    name="orders_service",
    database_name="orders.sqlite3",
    default_port=8101,
    migrations=models.MIGRATIONS,
    routes=urls.urlpatterns,
    tables=models.TABLES,
    copy_from_legacy=importer.copy_from_legacy,
    event_handlers=models.EVENT_HANDLERS,
    configure=views.configure,
    lifecycle=views.lifecycle,
)
