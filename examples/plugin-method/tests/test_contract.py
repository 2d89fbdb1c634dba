"""The example method against contraseg's method contract: every test of MethodContract."""

from contraseg.testing import MethodContract


class TestExampleFCN(MethodContract):
    method = "example-fcn"
