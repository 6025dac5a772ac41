from extracted_services.common.service import Service
from extracted_services.payments_service import importer, models, urls, views

SERVICE = Service(
    name="payments_service",
    database_name="payments.sqlite3",
    default_port=8103,
    migrations=models.MIGRATIONS,
    routes=urls.urlpatterns,
    tables=models.TABLES,
    copy_from_legacy=importer.copy_from_legacy,
    event_handlers=models.EVENT_HANDLERS,
    configure=views.configure,
)
