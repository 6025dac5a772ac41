"""The payments service: payment records, readable now; taking payments moves here later."""
