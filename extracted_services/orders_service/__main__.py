"""`python -m extracted_services.orders_service migrate|import-from-legacy|runserver --port P`."""

import sys

from extracted_services.common.cli import main
from extracted_services.orders_service.service import SERVICE

if __name__ == "__main__":
    sys.exit(main(SERVICE))
