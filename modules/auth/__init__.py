"""PyAuth: a minimal EVerest Auth module (tokens to EVSEs); core.py decides, module.py binds."""
