from starlette.routing import Route

from legacy_monolith.core import views

app_name = "core"

urlpatterns = [
    Route("/", views.home, name="home"),
    Route("/health/live", views.health_live, name="health-live"),
    Route("/health/ready", views.health_ready, name="health-ready"),
    Route("/uploads/", views.upload, methods=["GET", "POST"], name="upload"),
    Route("/reports/slow/", views.slow_report, name="slow-report"),
]
