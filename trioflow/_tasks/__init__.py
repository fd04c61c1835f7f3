"""Running many tasks: task groups with limits and error policies, parallel map."""
