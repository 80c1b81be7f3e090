# A team's own suite: one line puts the kit's checks in it (run by tests/test_pytest_plugin.py).
import os

from conformance.pytest_plugin import conformance_tests

test_portal = conformance_tests(os.environ["BC_CONFORMANCE_TEST_APP"], modes=("AzApp", "AzUser"))
