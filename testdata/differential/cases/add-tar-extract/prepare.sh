mkdir -p t/dir/sub && echo one > t/dir/one && echo two > t/dir/sub/two && ln -s one t/dir/sl && chmod 0750 t/dir/sub
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C t -cf plain.tar dir
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C t -czf comp.tgz dir
rm -rf t
