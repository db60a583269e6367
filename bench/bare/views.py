from rest_framework import generics, serializers

from bench.bare.models import Item


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ("id", "name", "description", "created_at")


class ItemList(generics.ListAPIView):
    queryset = Item.objects.order_by("id")
    serializer_class = ItemSerializer
