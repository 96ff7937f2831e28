# Attributes of other targets in expressions (target.NAME.ATTR), in any block order.
target "bar" {
  context = target.foo.dockerfile
  tags    = ["registry.example/bar:${target.foo.name}"]
}

target "foo" {
  dockerfile = "foo.Dockerfile"
  cache-from = ["type=local,src=cache"]
}

target "app" {
  cache-to = [target.foo.cache-from[0]]
  args = {
    FROM_BAR = target.bar.tags[0]
  }
}
