ln h1 h2
mkdir d
ln h1 d/h3
