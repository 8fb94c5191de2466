"""msgspec Structs that validate requests and shape responses, and the 422 format."""
