package io.sparkdock.auth;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * HiveServer2 CUSTOM authentication for the sparkdock SQL endpoint (Spark Thrift Server).
 *
 * <p>Every user name is accepted; the password must equal the JVM property
 * {@code spark.sparkdock.sql.password}. It comes from the SQL role's 0600 properties file
 * ({@code spark-submit --properties-file}, which makes every {@code spark.*} property of the file a property
 * of the JVM), never from a command line ({@code ps} shows it) or the environment ({@code docker inspect}
 * shows it). The comparison runs in constant time. When the property is unset or empty, every login is
 * refused.
 *
 * <p>Enabled with {@code --hiveconf hive.server2.authentication=CUSTOM --hiveconf
 * hive.server2.custom.authentication.class=io.sparkdock.auth.SparkdockPasswdAuthenticator}.
 */
public class SparkdockPasswdAuthenticator implements PasswdAuthenticationProvider {

    /** Name of the JVM property holding the expected password. */
    public static final String PASSWORD_PROPERTY = "spark.sparkdock.sql.password";

    private final byte[] expected;

    /** Reads the expected password from the JVM's properties once. */
    public SparkdockPasswdAuthenticator() {
        this(System.getProperty(PASSWORD_PROPERTY));
    }

    /** For tests: uses the given expected password (null or empty refuses everything). */
    SparkdockPasswdAuthenticator(String expectedPassword) {
        this.expected = (expectedPassword == null || expectedPassword.isEmpty())
            ? null : expectedPassword.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public void Authenticate(String user, String password) throws AuthenticationException {
        if (expected == null) {
            throw new AuthenticationException(
                "sparkdock: no SQL password is configured (" + PASSWORD_PROPERTY + " is unset); login refused");
        }
        byte[] given = password == null ? new byte[0] : password.getBytes(StandardCharsets.UTF_8);
        // MessageDigest.isEqual is constant-time in the content (Java 7u6+); length is not secret.
        if (!MessageDigest.isEqual(expected, given)) {
            throw new AuthenticationException("sparkdock: invalid user name or password");
        }
    }
}
