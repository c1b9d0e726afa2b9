pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.kafka",
    "tests.fixtures.registry",
    "tests.fixtures.cameras",
]
