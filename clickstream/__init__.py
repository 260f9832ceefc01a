"""clickstream: the development and operations tools (local stack, emulators, load generator,
audit, erase). They may import every part; no part imports them."""
