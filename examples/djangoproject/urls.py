from django.http import HttpResponse, JsonResponse
from django.urls import path


def index(request):
    return HttpResponse("Hello from Django!\n", content_type="text/plain")


def info(request):
    return JsonResponse({"path": request.path, "secure": request.is_secure(),
                         "host": request.get_host()})


urlpatterns = [path("", index), path("info", info)]
