//! zpipe's devices: the guide's QUEUE, FORWARDER and STREAMER proxies, and the
//! table of socket types that may talk to each other. (Filled in by the
//! devices work; the crate exists so the workspace has its final shape.)
#![forbid(unsafe_code)]
