"""`python -m extracted_services.payments_service migrate|import-from-legacy|runserver --port P`."""

import sys

from extracted_services.common.cli import main
from extracted_services.payments_service.service import SERVICE

if __name__ == "__main__":
    sys.exit(main(SERVICE))
