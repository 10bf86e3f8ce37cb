//! crispy-streamer
