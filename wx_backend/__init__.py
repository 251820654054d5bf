"""The core of the online service hall: configuration, storage, domain services, WeChat gateway."""
