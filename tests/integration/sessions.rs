//! Integration tests: sessions over real sockets.
