from django.urls import path

from bench.bare.views import ItemList

urlpatterns = [path("items/", ItemList.as_view())]
