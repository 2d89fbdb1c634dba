"""An example contraseg plugin: the `example-fcn` method (contraseg_example.method)."""
