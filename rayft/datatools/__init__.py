"""The `rayft data` drivers that run models over data: inspection and preference pairs."""
