"""Sans-IO HTTP/1.1: bytes in, events out. Nothing in this package touches a socket."""
