"""CareLoop: device-aware service and marketing for connected appliances."""

__version__ = "0.1.0"
