mkdir -p t/d && echo a > t/d/a && echo b > t/d/b && chmod 0604 t/d/a && chmod 4711 t/d/b
tar --sort=name --owner=1234 --group=5678 --numeric-owner --mtime=@0 -C t -cf own.tar d
rm -rf t
