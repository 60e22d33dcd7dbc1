"""The ground floor: errors, paths, folders published atomically, plotting. Imports no other rayft
folder."""
