from starlette.routing import Route

from legacy_monolith.accounts import views

app_name = "accounts"

urlpatterns = [
    Route("/login/", views.login, methods=["GET", "POST"], name="login"),
    Route("/logout/", views.logout, methods=["GET", "POST"], name="logout"),
    Route("/profile/", views.profile, name="profile"),
]
